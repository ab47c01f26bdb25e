module {
  func.func @core0() {
    "llmpu.addi"() {imm = -1 : i64, rd = 31 : i64, rs1 = 31 : i64} : () -> () loc("dec")
    "llmpu.bne"() {rs1 = 31 : i64, rs2 = 0 : i64, target = -1 : i64} : () -> () loc("loop")
    func.return loc(unknown)
  } loc("core0")
}
