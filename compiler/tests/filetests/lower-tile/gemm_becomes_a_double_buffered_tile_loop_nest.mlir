// passes: tile,plan-memory,lower-tile
// A 2-D matmul of more than one row block becomes a tile.kernel: loops over M and N tiles (both
// parallel), a K loop whose matmul starts a new accumulation at k = 0, A/B/acc/out buffers of two
// slots, the accumulator converted to the storage type and stored. The partial last N tile (300 =
// 256 + 44) is the same code: the DMA cuts it at the buffer's end.
module attributes {llmpu.precision = "fp32", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<160x64xf32>, %arg1: tensor<64x300xf32>) -> tensor<160x300xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) {tile = array<i64: 32, 32, 256>} : (tensor<160x64xf32>, tensor<64x300xf32>) -> tensor<160x300xf32> loc("MatMul_0")
    func.return %0 : tensor<160x300xf32> loc(unknown)
  } loc("main")
}
