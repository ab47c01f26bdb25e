module {
  func.func @main(%q: tensor<1x2x16xf32>, %k: tensor<1x2x8xf32>, %v: tensor<1x2x8xf32>, %mask: tensor<2x5xi1>, %pk: tensor<1x2x3x4xf32>, %pv: tensor<1x2x3x4xf32>) -> (tensor<1x2x16xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32>) {
    %y:3 = "graph.attention"(%q, %k, %v, %mask, %pk, %pv) {kv_num_heads = 2 : i64, q_num_heads = 4 : i64} : (tensor<1x2x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8xf32>, tensor<2x5xi1>, tensor<1x2x3x4xf32>, tensor<1x2x3x4xf32>) -> (tensor<1x2x16xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32>) loc("Attention")
    func.return %y#0, %y#1, %y#2 : tensor<1x2x16xf32>, tensor<1x2x5x4xf32>, tensor<1x2x5x4xf32> loc(unknown)
  } loc("main")
}
