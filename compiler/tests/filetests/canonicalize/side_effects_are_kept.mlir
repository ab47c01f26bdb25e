module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = "graph.identity"(%arg0) : (tensor<4xf32>) -> tensor<4xf32> loc("Identity")
    "test.print"(%0) : (tensor<4xf32>) -> () loc("print")
    %1 = "test.unknown"(%0) : (tensor<4xf32>) -> tensor<4xf32> loc("unused_but_unknown")
    %2 = "graph.cast"(%arg0) : (tensor<4xf32>) -> tensor<4xbf16> loc("real_cast")
    "test.sink"(%2) : (tensor<4xbf16>) -> () loc("sink")
    func.return %0 : tensor<4xf32> loc(unknown)
  } loc("main")
}
