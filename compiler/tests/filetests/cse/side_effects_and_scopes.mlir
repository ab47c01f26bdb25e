module {
  func.func @main(%arg0: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
    %0 = "test.random"() : () -> tensor<4xf32> loc("rand_a")
    %1 = "test.random"() : () -> tensor<4xf32> loc("rand_b")
    %2 = "graph.exp"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Exp_outer")
    "test.region"() ({
      %3 = "graph.exp"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Exp_inner")
      %4 = "graph.sin"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Sin_inner")
      "test.use"(%3, %4) : (tensor<4xf32>, tensor<4xf32>) -> () loc(unknown)
    }) : () -> () loc("region")
    %5 = "graph.sin"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Sin_outer")
    %6 = "graph.add"(%0, %1) : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32> loc("Add")
    func.return %2, %5, %6 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32> loc(unknown)
  } loc("main")
}
