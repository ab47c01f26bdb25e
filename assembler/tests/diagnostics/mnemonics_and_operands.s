; Several independent errors in one file: all are reported.
.core 0
    hlt
    li r1
    li r32, 5
    dma.load r2, r1, 70000, 64, 1, r3, r0, r3, r0, bf16, rows
    vpu.add sram.f33[r1, r2], acc.f32[r3, r4], sram.f32[r5, r6], 8, 16, rows
    li r1, 0x1_0000_0000
    mxu.matmul r1, r2, r3, 1, 1, 1, r4, r5, r6, bf16, add
    vpu.copy acc.bf16[r1, r2], sram.u64[r3, r4], 8, 16, full
    halt extra
