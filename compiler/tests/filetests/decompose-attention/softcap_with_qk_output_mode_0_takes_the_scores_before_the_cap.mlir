module {
  func.func @main(%q: tensor<1x1x2x4xf32>, %k: tensor<1x1x3x4xf32>, %v: tensor<1x1x3x4xf32>, %mask: tensor<2x2xf32>) -> (tensor<1x1x2x4xf32>, tensor<1x1x2x3xf32>) {
    %y:4 = "graph.attention"(%q, %k, %v, %mask) {qk_matmul_output_mode = 0 : i64, scale = 0.5 : f32, softcap = 8.0 : f32} : (tensor<1x1x2x4xf32>, tensor<1x1x3x4xf32>, tensor<1x1x3x4xf32>, tensor<2x2xf32>) -> (tensor<1x1x2x4xf32>, tensor<1x1x3x4xf32>, tensor<1x1x3x4xf32>, tensor<1x1x2x3xf32>) loc("Attention")
    func.return %y#0, %y#3 : tensor<1x1x2x4xf32>, tensor<1x1x2x3xf32> loc(unknown)
  } loc("main")
}
