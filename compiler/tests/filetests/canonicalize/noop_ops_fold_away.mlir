module {
  func.func @main(%arg0: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<8x4xf32>, tensor<4x8xf32>) {
    %0 = "graph.identity"(%arg0) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Identity_0")
    %1 = "graph.reshape"(%0) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Reshape_noop")
    %2 = "graph.cast"(%1) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Cast_noop")
    %3 = "graph.transpose"(%2) {perm = array<i64: 0, 1>} : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Transpose_identity")
    %4 = "graph.relu"(%3) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Relu")
    %5 = "graph.transpose"(%4) {perm = array<i64: 1, 0>} : (tensor<4x8xf32>) -> tensor<8x4xf32> loc("T1")
    %6 = "graph.transpose"(%5) {perm = array<i64: 1, 0>} : (tensor<8x4xf32>) -> tensor<4x8xf32> loc("T2")
    %7 = "graph.neg"(%6) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Neg1")
    %8 = "graph.neg"(%7) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Neg2")
    %9 = "graph.exp"(%8) : (tensor<4x8xf32>) -> tensor<4x8xf32> loc("Exp_dead")
    func.return %8, %5, %4 : tensor<4x8xf32>, tensor<8x4xf32>, tensor<4x8xf32> loc("return")
  } loc("main")
}
