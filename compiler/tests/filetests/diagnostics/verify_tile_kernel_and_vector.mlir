module {
  func.func @main(%arg0: tensor<64x32xf32>) -> tensor<64x32xf32> {
    %0 = "tile.kernel"(%arg0) ({
    ^bb0(%a: memref<64x16xf32, "hbm">, %y: memref<64x32xf32, "hbm">):
      %1 = "tile.alloc"() {slots = 0 : i64} : () -> memref<32x32xf32, "sram"> loc("ring")
      %2 = "tile.alloc"() : () -> memref<32x32xf32, "sram"> loc("out")
      "tile.vector"(%1, %2) {kind = "softplus"} : (memref<32x32xf32, "sram">, memref<32x32xf32, "sram">) -> () loc("vector")
      "tile.yield"() : () -> () loc("yield")
    }) {op = "graph.exp"} : (tensor<64x32xf32>) -> tensor<64x32xf32> loc("kernel")
    func.return %0 : tensor<64x32xf32> loc(unknown)
  } loc("main")
}
