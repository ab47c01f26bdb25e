module {
  func.func @main(%arg0: tensor<?x64xf32, #graph.dims<"seq", 64>>, %arg1: tensor<1x64xf32>) -> tensor<?x?xf32> {
    %0 = "graph.add"(%arg0, %arg1) : (tensor<?x64xf32, #graph.dims<"seq", 64>>, tensor<1x64xf32>) -> tensor<?x?xf32> loc("Add_0")
    %1 = "graph.shape"(%0) : (tensor<?x?xf32>) -> tensor<2xi64> loc("Shape_0")
    func.return %0 : tensor<?x?xf32> loc("return")
  } loc("main")
}
