// passes: tile,plan-memory,lower-tile,distribute-cores,defer-epilogues,lower-llmpu
// A tile.kernel's K loop (32 steps) rolls into a block ending in `llmpu.bne`; the first tile's
// conversion and store come after the second tile's K loop (deferred epilogue).
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<64x1024xf32>, %arg1: tensor<1024x32xf32>) -> tensor<64x32xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) {tile = array<i64: 32, 32, 32>} : (tensor<64x1024xf32>, tensor<1024x32xf32>) -> tensor<64x32xf32> loc("MatMul_0")
    func.return %0 : tensor<64x32xf32> loc(unknown)
  } loc("main")
}
