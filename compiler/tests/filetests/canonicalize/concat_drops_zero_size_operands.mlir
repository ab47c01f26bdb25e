module {
  func.func @main(%x: tensor<1x4x8x16xf32>, %e: tensor<1x4x8x0xf32>, %y: tensor<1x4x8x4xf32>) -> (tensor<1x4x8x16xf32>, tensor<1x4x8x20xf32>) {
    %a = "graph.concat"(%x, %e) {axis = -1 : i64} : (tensor<1x4x8x16xf32>, tensor<1x4x8x0xf32>) -> tensor<1x4x8x16xf32> loc("ConcatEmptyPass")
    %b = "graph.concat"(%x, %e, %y) {axis = -1 : i64} : (tensor<1x4x8x16xf32>, tensor<1x4x8x0xf32>, tensor<1x4x8x4xf32>) -> tensor<1x4x8x20xf32> loc("ConcatThree")
    func.return %a, %b : tensor<1x4x8x16xf32>, tensor<1x4x8x20xf32> loc(unknown)
  } loc("main")
}
