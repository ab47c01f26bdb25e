// passes: fuse-attention,decompose-attention
module {
  func.func @main(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x4x8xf32>, %v: tensor<1x2x4x8xf32>, %q3: tensor<1x4x16xf32>, %k3: tensor<1x4x16xf32>, %v3: tensor<1x4x16xf32>) -> (tensor<1x2x4x8xf32>, tensor<1x4x16xf32>) {
    %a = "graph.attention"(%q, %k, %v) {is_causal = 1 : i64} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32> loc("Fusable")
    %b = "graph.attention"(%q3, %k3, %v3) {is_causal = 1 : i64, kv_num_heads = 2 : i64, q_num_heads = 2 : i64} : (tensor<1x4x16xf32>, tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<1x4x16xf32> loc("ThreeD")
    func.return %a, %b : tensor<1x2x4x8xf32>, tensor<1x4x16xf32> loc(unknown)
  } loc("main")
}
