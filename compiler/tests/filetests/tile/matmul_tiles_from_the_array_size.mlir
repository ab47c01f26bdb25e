module attributes {llmpu.precision = "bf16", llmpu.target = "edge"} {
  func.func @main(%arg0: tensor<64x128xf32>, %arg1: tensor<128x256xf32>) -> tensor<64x256xf32> {
    %0 = "graph.matmul"(%arg0, %arg1) : (tensor<64x128xf32>, tensor<128x256xf32>) -> tensor<64x256xf32> loc("MatMul_0")
    %1 = "graph.matmul"(%arg0, %arg1) {tile = array<i64: 32, 32, 32>} : (tensor<64x128xf32>, tensor<128x256xf32>) -> tensor<64x256xf32> loc("MatMul_kept")
    %2 = "graph.add"(%0, %1) : (tensor<64x256xf32>, tensor<64x256xf32>) -> tensor<64x256xf32> loc("Add_0")
    func.return %2 : tensor<64x256xf32> loc(unknown)
  } loc("main")
}
