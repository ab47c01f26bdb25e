.target edgy
.target_toml "name = 1"
.inptu x : f32[4] @ 0x0
.input x : f33[4] @ 0x0
.f32 1.0
.data w @ 0x40
    .i8 300
    .hex "abc"
    .incbin "no-such-file.bin"
    .f32 1.0, bogus
.core 2
.loc "unterminated
    halt  # comment?
