; Row softmax on the vector unit: Y[64x256] = softmax(X, axis=-1), f32.
;
; The DMA loads four 16-row blocks into separate SRAM buffers and signals s1 after each; the vector
; unit waits for a block, computes max-subtracted exponentials normalized by their row sums, and
; signals s2; the DMA stores each finished block. Row vectors of 16 maxima / sums use row stride 1.
; SRAM: X blocks 0x00000 + b*0x4000 | Y blocks 0x10000 + b*0x4000 | max 0x20000 | sum 0x20100

.target edge
.input  X : f32[64, 256] @ 0x0
.output Y : f32[64, 256] @ 0x10000

.core 0
.loc "load"
    li   r1, 0              ; block
    li   r2, 4              ; blocks
    li   r3, 256            ; row stride (elements)
    li   r4, 0x0            ; X block in HBM
    li   r5, 0x0            ; X block in SRAM
    li   r6, 16384          ; bytes per block
    li   r7, 1              ; stride of the per-row vectors
load:
    dma.load r5, r4, 256, 16, 1, r3, r0, r3, r0, f32, rows
    dma.signal s1
    add  r4, r4, r6
    add  r5, r5, r6
    addi r1, r1, 1
    blt  r1, r2, load

.loc "softmax"
    li   r1, 0
    li   r5, 0x0            ; X block in SRAM
    li   r8, 0x10000        ; Y block in SRAM
    li   r9, 0x20000        ; row maxima
    li   r10, 0x20100       ; row sums, then their reciprocals
    li   r11, 0x10000       ; Y block in HBM
block:
    vpu.wait s1, 1
    vpu.rmax  sram.f32[r9, r7], sram.f32[r5, r3], 16, 256
    vpu.sub   sram.f32[r8, r3], sram.f32[r5, r3], sram.f32[r9, r7], 16, 256, col
    vpu.exp   sram.f32[r8, r3], sram.f32[r8, r3], 16, 256, full
    vpu.rsum  sram.f32[r10, r7], sram.f32[r8, r3], 16, 256
    vpu.recip sram.f32[r10, r7], sram.f32[r10, r7], 16, 1, full
    vpu.mul   sram.f32[r8, r3], sram.f32[r8, r3], sram.f32[r10, r7], 16, 256, col
    vpu.signal s2
    dma.wait s2, 1
    dma.store r8, r11, 256, 16, 1, r3, r0, r3, r0, f32, rows
    add  r5, r5, r6
    add  r8, r8, r6
    add  r11, r11, r6
    addi r1, r1, 1
    blt  r1, r2, block
    halt
