// passes: tile,plan-memory,lower-tile,distribute-cores,defer-epilogues,lower-llmpu
// A tile.kernel over 8 row tiles: its K loop (32 steps, a ring of 4 A/B slots) rolls into blocks
// ending in `llmpu.bne`; each tile's conversion and store come after the next tile's K loop
// (deferred epilogue), the last tile's at the end.
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<256x1024xf32>, %arg1: tensor<1024x32xf32>) -> tensor<256x32xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) {tile = array<i64: 32, 32, 32>} : (tensor<256x1024xf32>, tensor<1024x32xf32>) -> tensor<256x32xf32> loc("MatMul_0")
    func.return %0 : tensor<256x32xf32> loc(unknown)
  } loc("main")
}
