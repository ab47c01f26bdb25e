module {
  func.func @main(%q: tensor<2x1x2x4xf32>, %k: tensor<2x1x4x4xf32>, %v: tensor<2x1x4x4xf32>, %np: tensor<2xi64>) -> tensor<2x1x2x4xf32> {
    %y = "graph.attention"(%q, %k, %v, %np) {is_causal = 1 : i64, operand_slots = array<i64: 0, 1, 2, 6>} : (tensor<2x1x2x4xf32>, tensor<2x1x4x4xf32>, tensor<2x1x4x4xf32>, tensor<2xi64>) -> tensor<2x1x2x4xf32> loc("Attention")
    func.return %y : tensor<2x1x2x4xf32> loc(unknown)
  } loc("main")
}
