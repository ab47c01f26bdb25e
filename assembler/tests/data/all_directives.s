; Every directive at least once (the round-trip test assembles, disassembles and reassembles it).
.target edge
.input  x : f32[4, 16] @ 0x0          // inputs
.output "y/out:0" : bf16[4, 16] @ 0x1_000
.input  s : i64[] @ 0x2000
.data   w @ 0x4000
    .hex  "00ff10 20"
    .f32  1.0, -2.5, inf, -inf, nan, nan(0x7fc00001), 1e-45
    .f16  1.5, 65504
    .bf16 3.14159
    .f8e4m3 448, -0.5, 1000
    .i8   -128, 127
    .u8   255, 0
    .i32  -2147483648, 2147483647
    .i64  -9223372036854775808, 0x7fff_ffff_ffff_ffff
    .i16  -32768, 32767
    .u16  65535, 0
    .u32  4294967295, 7
    .u64  18446744073709551615, 0x10
    .f64  0.1, -2.5, inf, nan
    .incbin "blob.bin"
.data   empty @ 0x8000
.data   "bias/0" @ 0x8040
    .i32 7

.core 0
.loc "node_a"
start:
    li   r1, 0x1000
    lih  r1, 4294967295
    li   r2, -2147483648
    addi r3, r3, -1
"weird label": nop
loop:
    dma.load r2, r1, 64, 64, 1, r3, r0, r3, r0, bf16, rows
.loc "node \"b\"\n"
    vpu.add sram.f32[r1, r2], acc.f32[r3, r4], sram.f32[r5, r6], 8, 16, row
    vpu.adds sram.bf16[r1, r2], sram.bf16[r1, r2], -0.0, 8, 16
    vpu.fill acc.f32[r1, r2], nan(0xffc00001), 1, 1
    vpu.round sram.i16[r1, r2], sram.f64[r3, r4], 8, 16, full
    vpu.floor sram.u64[r1, r2], acc.i32[r3, r4], 8, 16, row
    vpu.ceil sram.u16[r1, r2], sram.u32[r3, r4], 8, 16, col
    vpu.trunc sram.i32[r1, r2], sram.f64[r3, r4], 8, 16, full
    blt  r1, r2, loop
    bne  r1, r2, .+2
    jmp  "weird label"
    beq  r0, r0, .-3
    mxu.matmul r1, r2, r3, 128, 64, 65535, r4, r5, r31, bf16, acc
    wait s31, 255
    halt
end:
