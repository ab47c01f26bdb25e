module {
  func.func @main(%x: tensor<1x3x16xf32>, %cos: tensor<1x3x2xf32>, %sin: tensor<1x3x2xf32>) -> tensor<1x3x16xf32> {
    %y = "graph.rotary_embedding"(%x, %cos, %sin) {interleaved = 1 : i64, num_heads = 2 : i64, rotary_embedding_dim = 4 : i64} : (tensor<1x3x16xf32>, tensor<1x3x2xf32>, tensor<1x3x2xf32>) -> tensor<1x3x16xf32> loc("RotaryEmbedding")
    func.return %y : tensor<1x3x16xf32> loc(unknown)
  } loc("main")
}
