// Every syntax form the printer produces; print -> parse -> print must be the identity.
module {
  func.func @main(%arg0: tensor<?x64xf32, #graph.dims<"sequence_length", 64>> {graph.name = "x"}, %arg1: tensor<4xbf16>) -> (tensor<?x64xf32, #graph.dims<"sequence_length", 64>>, tensor<4xbf16>) attributes {graph.opset = 17 : i64} {
    %0 = "graph.relu"(%arg0) : (tensor<?x64xf32, #graph.dims<"sequence_length", 64>>) -> tensor<?x64xf32, #graph.dims<"sequence_length", 64>> loc(fused["Relu_0", "Identity_3"])
    %1 = "graph.constant"() {value = dense<[1.0, 2.5, -3.0, 4.0]> : tensor<4xbf16>} : () -> tensor<4xbf16> loc("c0")
    %2 = "graph.add"(%arg1, %1) : (tensor<4xbf16>, tensor<4xbf16>) -> tensor<4xbf16> loc("Add_1")
    %3 = "graph.constant"() {value = dense<1> : tensor<2x3xi64>} : () -> tensor<2x3xi64> loc(unknown)
    %4:2 = "graph.split"(%3) {axis = 0 : i64} : (tensor<2x3xi64>) -> (tensor<1x3xi64>, tensor<1x3xi64>) loc("Split")
    %5 = "graph.concat"(%4#1, %4#0) {axis = 0 : i64} : (tensor<1x3xi64>, tensor<1x3xi64>) -> tensor<2x3xi64> loc("Concat")
    %6 = "test.attrs"() {a = 1 : i32, b = 1.0e-5 : f32, c = 0x7FC00000 : f32, d = "quote\22 and newline\0A", e = true, f, g = [1 : i64, "x", [false]], h = array<i64: 1, 0>, i = array<i64>, j = array<f32: 0.5, 2.0>, k = tensor<4xf8E4M3FN>, l = {nested = 3 : ui8}, m = (tensor<2xi1>, index) -> memref<16x64xbf16, "sram">, n = dense<"0x38B8"> : tensor<2xf8E4M3FN>, o = dense<[true, false]> : tensor<2xi1>, p = dense<[[1, 2], [3, 4]]> : tensor<2x2xui8>, q = 255 : ui8, r = -128 : i8} : () -> i1 loc("attrs")
    func.return %0, %2 : tensor<?x64xf32, #graph.dims<"sequence_length", 64>>, tensor<4xbf16> loc("return")
  } loc("main")
  func.func @tiles(%arg0: memref<1024x64xbf16, "hbm">) {
    %0 = "tile.alloc"() : () -> memref<128x64xbf16, "sram"> loc("alloc")
    "tile.for"() ({
    ^bb0(%arg1: index):
      %1 = "test.zero"() : () -> index loc(unknown)
      "tile.dma_load"(%arg0, %0, %arg1, %1) : (memref<1024x64xbf16, "hbm">, memref<128x64xbf16, "sram">, index, index) -> () loc("load")
      "tile.yield"() : () -> () loc(unknown)
    }) {lower = 0 : i64, step = 128 : i64, upper = 1024 : i64} : () -> () loc("loop")
    "llmpu.dma.wait"() {count = 1 : i64, sem = 3 : i64} : () -> () loc("wait")
    "llmpu.halt"() : () -> () loc(unknown)
    func.return loc(unknown)
  } loc("tiles")
}
