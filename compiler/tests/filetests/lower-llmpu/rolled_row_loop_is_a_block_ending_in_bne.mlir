// passes: tile,plan-memory,lower-llmpu
// The elementwise kernel rolls its rounds of row tiles into a counted loop: the loop body is the
// block ^bb1, entered by falling through from the prologue and ending in `llmpu.bne` back to itself
// or on to the tail rounds in ^bb2.
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%x: tensor<2048x512xf32>) -> tensor<2048x512xf32> {
    %r = "graph.relu"(%x) : (tensor<2048x512xf32>) -> tensor<2048x512xf32> loc("Relu")
    func.return %r : tensor<2048x512xf32> loc(unknown)
  } loc("main")
}
