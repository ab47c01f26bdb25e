// Successor lists (`[^bb1, ^bb2]` right after the operands) and labeled blocks, in a function body
// of several blocks and in a generic op's region; a later block may be named before it is defined.
module {
  func.func @core0() {
    "llmpu.li"() {imm = 3 : i64, rd = 31 : i64} : () -> () loc("Loop")
    "llmpu.fallthrough"()[^bb1] : () -> () loc(unknown)
  ^bb1:
    "llmpu.addi"() {imm = -1 : i64, rd = 31 : i64, rs1 = 31 : i64} : () -> () loc("Loop")
    "llmpu.bne"()[^bb1, ^bb2] {rs1 = 31 : i64, rs2 = 0 : i64} : () -> () loc("Loop")
  ^bb2:
    "llmpu.jmp"()[^bb4] : () -> () loc("Skip")
  ^bb3:
    "llmpu.halt"() : () -> () loc("Skipped")
    "llmpu.fallthrough"()[^bb4] : () -> () loc(unknown)
  ^bb4:
    func.return loc(unknown)
  } loc(unknown)
  func.func @generic(%arg0: i32) {
    "x.region"() ({
      "x.br"()[^bb2] : () -> () loc(unknown)
    ^bb1(%arg1: i32):
      "x.cond_br"(%arg1, %arg0)[^bb1, ^bb2] : (i32, i32) -> () loc(unknown)
    ^bb2:
      "x.end"() : () -> () loc(unknown)
    }) : () -> () loc(unknown)
    func.return loc(unknown)
  } loc(unknown)
}
