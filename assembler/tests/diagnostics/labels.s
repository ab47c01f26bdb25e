.core 0
loop:
    nop
loop:
    blt r1, r2, lop
    jmp nowhere
    jmp .+5
    halt
