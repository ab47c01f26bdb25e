; Literals that do not fit their field are reported as out of range, not as a missing operand.
.target edge
.core 0
    li r1, 99999999999999999999999999999
    li r2, -99999999999999999999999999999
    addi r3, r3, 0xffffffffffffffffffffffff
    vpu.adds sram.f32[r1, r2], sram.f32[r1, r2], 1e999, 1, 1
    vpu.adds sram.f32[r1, r2], sram.f32[r1, r2], -1e999, 1, 1
    vpu.adds sram.f32[r1, r2], sram.f32[r1, r2], inf, 1, 1
    vpu.adds sram.f32[r1, r2], sram.f32[r1, r2], -inf, 1, 1
    jmp .+99999999999999999999999
    halt
.data w @ 0x0
.f32 1.0, 1e39
