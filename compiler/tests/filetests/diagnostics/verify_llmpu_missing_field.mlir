module {
  func.func @main() {
    "llmpu.dma.wait"() {sem = 3 : i64} : () -> () loc("wait")
    func.return loc(unknown)
  } loc("main")
}
