module {
  func.func @core0() {
    "llmpu.jmp"()[^bb3] : () -> () loc("jump")
  ^bb1:
    func.return loc(unknown)
  } loc("core0")
}
