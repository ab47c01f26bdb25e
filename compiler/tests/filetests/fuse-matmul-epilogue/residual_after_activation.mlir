module {
  func.func @main(%x: tensor<4x16xf32>, %w: tensor<16x8xf32>, %b: tensor<1x8xf32>, %h: tensor<4x8xf32>, %g: tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
    %m1 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_proj")
    %b1 = "graph.add"(%m1, %b) : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32> loc("Add_bias")
    %r1 = "graph.add"(%h, %b1) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> loc("Add_residual_lhs")
    %m2 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_relu")
    %a2 = "graph.relu"(%m2) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Relu")
    %r2 = "graph.add"(%a2, %g) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> loc("Add_broadcast_residual")
    %m3 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_plain")
    %r3 = "graph.add"(%m3, %h) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> loc("Add_residual_rhs")
    %m4 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_two_uses")
    %r4 = "graph.add"(%m4, %h) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> loc("Add_not_fused")
    %s4 = "graph.mul"(%m4, %r4) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> loc("Mul_second_use")
    func.return %r1, %r2, %r3, %s4 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> loc(unknown)
  } loc("main")
}
