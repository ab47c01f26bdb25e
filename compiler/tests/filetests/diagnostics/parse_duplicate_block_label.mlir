module {
  func.func @core0() {
    "llmpu.jmp"()[^bb1] : () -> () loc("jump")
  ^bb1:
    "llmpu.jmp"()[^bb1] : () -> () loc("again")
  ^bb1:
    func.return loc(unknown)
  } loc("core0")
}
