module {
  func.func @core0() {
    "llmpu.li"() {imm = 4 : i64, rd = 31 : i64} : () -> () loc("li")
    "llmpu.fallthrough"()[^bb1] : () -> () loc("fallthrough")
  ^bb1:
    "llmpu.addi"() {imm = -1 : i64, rd = 31 : i64, rs1 = 31 : i64} : () -> () loc("dec")
    "llmpu.bne"()[^bb2, ^bb1] {rs1 = 31 : i64, rs2 = 0 : i64} : () -> () loc("loop")
  ^bb2:
    func.return loc(unknown)
  } loc("core0")
}
