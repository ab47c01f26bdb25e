module {
  func.func @main() -> (tensor<5xf32>, tensor<5xf32>, tensor<5xi64>, tensor<2x3xi64>, tensor<2x4xf32>) {
    %x = "graph.constant"() {value = dense<[1.0, 2.0, 3.0, 4.0, 5.0]> : tensor<5xf32>} : () -> tensor<5xf32> loc("x")
    %i = "graph.constant"() {value = dense<[1, 2, 3, 4, 5]> : tensor<5xi64>} : () -> tensor<5xi64> loc("i")
    %m = "graph.constant"() {value = dense<[[1, 1, 0], [0, 1, 1]]> : tensor<2x3xi64>} : () -> tensor<2x3xi64> loc("mask")
    %a0 = "graph.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64> loc("axis0")
    %a1 = "graph.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("axis1")
    %c = "graph.cumsum"(%x, %a0) : (tensor<5xf32>, tensor<i64>) -> tensor<5xf32> loc("CumSum")
    %ce = "graph.cumsum"(%x, %a0) {exclusive = 1 : i64} : (tensor<5xf32>, tensor<i64>) -> tensor<5xf32> loc("CumSumExclusive")
    %cr = "graph.cumsum"(%i, %a0) {reverse = 1 : i64} : (tensor<5xi64>, tensor<i64>) -> tensor<5xi64> loc("CumSumReverse")
    %pos = "graph.cumsum"(%m, %a1) : (tensor<2x3xi64>, tensor<1xi64>) -> tensor<2x3xi64> loc("PositionsFromMask")
    %t0 = "graph.constant"() {value = dense<[[1.0, 2.0]]> : tensor<1x2xf32>} : () -> tensor<1x2xf32> loc("t")
    %reps = "graph.constant"() {value = dense<[2, 2]> : tensor<2xi64>} : () -> tensor<2xi64> loc("reps")
    %t = "graph.tile"(%t0, %reps) : (tensor<1x2xf32>, tensor<2xi64>) -> tensor<2x4xf32> loc("Tile")
    func.return %c, %ce, %cr, %pos, %t : tensor<5xf32>, tensor<5xf32>, tensor<5xi64>, tensor<2x3xi64>, tensor<2x4xf32> loc(unknown)
  } loc("main")
}
