module {
  func.func @main(%x: tensor<4x16xf32>, %w: tensor<16x8xf32>, %b: tensor<1x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
    %h = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_silu")
    %s = "graph.sigmoid"(%h) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Sigmoid")
    %y = "graph.mul"(%h, %s) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> loc("Mul_silu")
    %h2 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_relu")
    %hb = "graph.add"(%h2, %b) : (tensor<4x8xf32>, tensor<1x8xf32>) -> tensor<4x8xf32> loc("Add_bias")
    %r = "graph.relu"(%hb) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Relu")
    %h3 = "graph.matmul"(%x, %w) : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32> loc("MatMul_plain")
    %e = "graph.exp"(%h3) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Exp_not_an_activation")
    func.return %y, %r, %e : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32> loc(unknown)
  } loc("main")
}
