; Embedding lookup with the DMA's index gather: out[t, :] = table[ids[t], :] for 512 token ids into
; a 1024 x 256 f32 table. The ids are loaded into SRAM once; rows are gathered 64 at a time into two
; alternating staging buffers and stored. One in-order DMA queue does everything, so no semaphores
; are needed: the queue's interlock orders each gather after the store that still reads its buffer,
; and alternating buffers lets a gather overlap the previous chunk's store.
; SRAM: ids 0x0 (512 x i64) | staging 0x1000 and 0x11000 (64 rows x 256 x f32 = 64 KiB each)

.target edge
.input  ids   : i64[512] @ 0x0
.input  table : f32[1024, 256] @ 0x1000
.output out   : f32[512, 256] @ 0x101000

.core 0
.loc "ids"
    li   r1, 0x0            ; ids in SRAM
    li   r2, 0x0            ; ids in HBM
    dma.load r1, r2, 512, 1, 1, r0, r0, r0, r0, i64, rows
.loc "gather"
    li   r3, 0x1000         ; table in HBM
    li   r4, 0x1000         ; staging buffer in SRAM
    li   r5, 256            ; row length = row stride (elements)
    li   r6, 0x101000       ; out chunk in HBM
    li   r9, 0x11000        ; second staging buffer
    li   r7, 0              ; chunk pair
    li   r8, 4              ; chunk pairs
chunk:
    dma.gather r4, r3, r1, 64, 256, r5, r5, f32, i64, 1024
    dma.store  r4, r6, 256, 64, 1, r5, r0, r5, r0, f32, rows
    addi r1, r1, 512        ; next 64 ids (8 bytes each)
    addi r6, r6, 65536      ; next 64 output rows
    dma.gather r9, r3, r1, 64, 256, r5, r5, f32, i64, 1024
    dma.store  r9, r6, 256, 64, 1, r5, r0, r5, r0, f32, rows
    addi r1, r1, 512
    addi r6, r6, 65536
    addi r7, r7, 1
    blt  r7, r8, chunk
    halt
