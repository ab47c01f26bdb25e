// What mlir-opt prints (plain `return`, no locations, unit attrs, properties) is accepted too.
module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xf32> {
    %0 = "graph.softmax"(%arg0) <{axis = 0 : i64}> {flag} : (tensor<4xf32>) -> tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}
