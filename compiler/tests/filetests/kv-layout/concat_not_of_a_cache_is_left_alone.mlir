module {
  func.func @main(%a: tensor<1x1x4x8xf32>, %n: tensor<1x1x1x8xf32>, %p: tensor<1x1x4x8xf32>) -> (tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32>) {
    %c = "graph.neg"(%a) : (tensor<1x1x4x8xf32>) -> tensor<1x1x4x8xf32> loc("Neg")
    %x = "graph.concat"(%c, %n) {axis = 2 : i64} : (tensor<1x1x4x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x1x5x8xf32> loc("Concat_computed_past")
    %y = "graph.concat"(%p, %n) {axis = 2 : i64} : (tensor<1x1x4x8xf32>, tensor<1x1x1x8xf32>) -> tensor<1x1x5x8xf32> loc("Concat_other_user")
    %z = "graph.neg"(%y) : (tensor<1x1x5x8xf32>) -> tensor<1x1x5x8xf32> loc("Neg_user")
    func.return %x, %y, %z : tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32>, tensor<1x1x5x8xf32> loc(unknown)
  } loc("main")
}
