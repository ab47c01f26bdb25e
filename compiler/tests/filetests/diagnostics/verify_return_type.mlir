module {
  func.func @main(%arg0: tensor<4xf32>) -> tensor<4xbf16> {
    func.return %arg0 : tensor<4xf32> loc("ret")
  } loc("main")
}
