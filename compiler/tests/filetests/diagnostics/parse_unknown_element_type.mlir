module {
  func.func @main(%arg0: tensor<4xf7>) {
    func.return
  }
}
