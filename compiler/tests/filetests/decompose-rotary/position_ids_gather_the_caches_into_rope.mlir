module {
  func.func @main(%x: tensor<1x2x3x8xf32>, %cos: tensor<16x4xf32>, %sin: tensor<16x4xf32>, %pos: tensor<1x3xi64>) -> tensor<1x2x3x8xf32> {
    %y = "graph.rotary_embedding"(%x, %cos, %sin, %pos) : (tensor<1x2x3x8xf32>, tensor<16x4xf32>, tensor<16x4xf32>, tensor<1x3xi64>) -> tensor<1x2x3x8xf32> loc("RotaryEmbedding")
    func.return %y : tensor<1x2x3x8xf32> loc(unknown)
  } loc("main")
}
