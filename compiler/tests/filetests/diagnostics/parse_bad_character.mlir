module {
  func.func @main() {
    "test.op"() : () -> () loc(!bad)
    func.return
  }
}
