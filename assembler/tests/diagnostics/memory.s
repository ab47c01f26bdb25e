.target edge
.input  a : f32[64] @ 0x0
.output b : f32[64] @ 0x80
.data   c @ 0x40
    .hex "00112233"
.data   d @ 0x1001
.input  e : f32[1024, 1024, 1024, 1024] @ 0x0
.input  a : f32[1] @ 0x100000
.data   huge @ 0xffff_ffff_ffff_ff00
    .u8 1
halt
