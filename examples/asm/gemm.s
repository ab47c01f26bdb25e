; Tiled GEMM on one core with double-buffered DMA:  C[512x512] f32 = A[512x256] bf16 · B[256x512] bf16.
;
; A stays resident in SRAM (loaded in four 128-row blocks that the first panel consumes as they
; arrive). B is streamed in 32-column panels into two SRAM buffers: the DMA loads panel j+1 while the
; matrix engine multiplies panel j into one of two accumulator buffers; the vector unit moves a
; finished panel from the accumulator to SRAM and the DMA stores it while later panels compute.
; Semaphores (per buffer b = 0/1):
;   s0     A block loaded            s1+b  B panel loaded      s3+b  B buffer free
;   s5+b   accumulator panel full    s7+b  accumulator free    s9+b  C staging full   s11+b C staging free
; SRAM: A 0x00000 (256 KiB) | B0 0x40000, B1 0x44000 (16 KiB each) | C0 0x48000, C1 0x58000 (64 KiB each)
; ACC:  panel 0 at 0x0, panel 1 at 0x10000 (64 KiB each)

.target edge
.input  A : bf16[512, 256] @ 0x0
.input  B : bf16[256, 512] @ 0x40000
.output C : f32[512, 512] @ 0x80000

.core 0
.loc "prologue"
    li   r1, 0              ; j: panel index
    li   r2, 16             ; panels
    li   r3, 256            ; K (A row stride)
    li   r4, 512            ; N (B and C row stride in HBM)
    li   r5, 32             ; panel width (B, accumulator and staging row stride)
    li   r23, 0x40000       ; B in HBM
    addi r6, r23, 64        ; B panel j+1 in HBM
    li   r7, 0x80000        ; C panel j in HBM
    li   r8, 0x40000        ; B0
    li   r9, 0x44000        ; B1
    li   r10, 0x0           ; accumulator panel 0
    li   r11, 0x10000       ; accumulator panel 1
    li   r12, 0x48000       ; C0 staging
    li   r13, 0x58000       ; C1 staging
    li   r17, 4             ; 128-row blocks
    li   r21, 16384         ; accumulator bytes per block (128 x 32 x f32)
    li   r22, 65536         ; A bytes per block (128 x 256 x bf16)
    dma.load r8, r23, 32, 256, 1, r4, r0, r5, r0, bf16, rows
    dma.signal s1
    li   r14, 0
    li   r18, 0x0           ; A in HBM
    li   r16, 0
load_a:
    dma.load r14, r18, 256, 128, 1, r3, r0, r3, r0, bf16, rows
    dma.signal s0
    add  r14, r14, r22
    add  r18, r18, r22
    addi r16, r16, 1
    blt  r16, r17, load_a
    signal s4
    signal s7
    signal s8
    signal s11
    signal s12

loop:
.loc "even panel"
    dma.wait s4, 1
    dma.load r9, r6, 32, 256, 1, r4, r0, r5, r0, bf16, rows
    dma.signal s2
    addi r6, r6, 64
    mxu.wait s1, 1
    mxu.wait s7, 1
    li   r14, 0
    add  r15, r10, r0
    li   r16, 0
block_even:
    bne  r1, r0, .+2
    mxu.wait s0, 1
    mxu.matmul r15, r14, r8, 128, 256, 32, r3, r5, r5, bf16, set
    add  r14, r14, r22
    add  r15, r15, r21
    addi r16, r16, 1
    blt  r16, r17, block_even
    mxu.signal s5
    mxu.signal s3
    vpu.wait s5, 1
    vpu.wait s11, 1
    vpu.copy sram.f32[r12, r5], acc.f32[r10, r5], 512, 32, full
    vpu.signal s7
    vpu.signal s9
    dma.wait s9, 1
    dma.store r12, r7, 32, 512, 1, r4, r0, r5, r0, f32, rows
    dma.signal s11
    addi r7, r7, 128
    addi r1, r1, 1

.loc "odd panel"
    addi r19, r1, 1
    bge  r19, r2, .+5
    dma.wait s3, 1
    dma.load r8, r6, 32, 256, 1, r4, r0, r5, r0, bf16, rows
    dma.signal s1
    addi r6, r6, 64
    mxu.wait s2, 1
    mxu.wait s8, 1
    li   r14, 0
    add  r15, r11, r0
    li   r16, 0
block_odd:
    mxu.matmul r15, r14, r9, 128, 256, 32, r3, r5, r5, bf16, set
    add  r14, r14, r22
    add  r15, r15, r21
    addi r16, r16, 1
    blt  r16, r17, block_odd
    mxu.signal s6
    mxu.signal s4
    vpu.wait s6, 1
    vpu.wait s12, 1
    vpu.copy sram.f32[r13, r5], acc.f32[r11, r5], 512, 32, full
    vpu.signal s8
    vpu.signal s10
    dma.wait s10, 1
    dma.store r13, r7, 32, 512, 1, r4, r0, r5, r0, f32, rows
    dma.signal s12
    addi r7, r7, 128
    addi r1, r1, 1
    blt  r1, r2, loop
.loc "epilogue"
    halt
