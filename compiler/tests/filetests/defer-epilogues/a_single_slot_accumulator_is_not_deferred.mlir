// With one accumulator slot the next tile's matmuls would overwrite what the deferred conversion
// reads: nothing is deferred.
module attributes {llmpu.precision = "fp32", llmpu.target = "datacenter"} {
  func.func @main(%arg0: tensor<512x256xf32>, %arg1: tensor<256x1024xf32>) -> tensor<512x1024xf32> attributes {llmpu.scratch = array<i64: 3670016, 0>} {
    %0 = "tile.kernel"(%arg0, %arg1) ({
    ^bb0(%arg2: memref<512x256xf32, "hbm">, %arg3: memref<256x1024xf32, "hbm">, %arg4: memref<512x1024xf32, "hbm">):
      %1 = "tile.alloc"() {slots = 2 : i64} : () -> memref<128x128xf32, "sram"> loc("MatMul_0")
      %2 = "tile.alloc"() {slots = 2 : i64} : () -> memref<128x128xf32, "sram"> loc("MatMul_0")
      %3 = "tile.alloc"() {slots = 1 : i64} : () -> memref<128x128xf32, "acc"> loc("MatMul_0")
      %4 = "tile.alloc"() {slots = 2 : i64} : () -> memref<128x128xf32, "sram"> loc("MatMul_0")
      "tile.for"() ({
      ^bb0(%arg5: index):
        "tile.for"() ({
        ^bb0(%arg6: index):
          "tile.for"() ({
          ^bb0(%arg7: index):
            "tile.dma_load"(%arg2, %1, %arg5, %arg7) : (memref<512x256xf32, "hbm">, memref<128x128xf32, "sram">, index, index) -> () loc("MatMul_0")
            "tile.dma_load"(%arg3, %2, %arg7, %arg6) : (memref<256x1024xf32, "hbm">, memref<128x128xf32, "sram">, index, index) -> () loc("MatMul_0")
            "tile.matmul"(%1, %2, %3, %arg7) : (memref<128x128xf32, "sram">, memref<128x128xf32, "sram">, memref<128x128xf32, "acc">, index) -> () loc("MatMul_0")
            "tile.yield"() : () -> () loc("MatMul_0")
          }) {lower = 0 : i64, step = 128 : i64, upper = 256 : i64} : () -> () loc("MatMul_0")
          "tile.vector"(%3, %4) {kind = "convert"} : (memref<128x128xf32, "acc">, memref<128x128xf32, "sram">) -> () loc("MatMul_0")
          "tile.dma_store"(%4, %arg4, %arg5, %arg6) : (memref<128x128xf32, "sram">, memref<512x1024xf32, "hbm">, index, index) -> () loc("MatMul_0")
          "tile.yield"() : () -> () loc("MatMul_0")
        }) {cores = 8 : i64, lower = 0 : i64, step = 128 : i64, upper = 1024 : i64} : () -> () loc("MatMul_0")
        "tile.yield"() : () -> () loc("MatMul_0")
      }) {lower = 0 : i64, parallel = true, step = 128 : i64, upper = 512 : i64} : () -> () loc("MatMul_0")
      "tile.yield"() : () -> () loc("MatMul_0")
    }) {llmpu.hbm = array<i64: 1572864>, llmpu.storage = ["f32"], op = "graph.matmul", tile = array<i64: 128, 128, 128>} : (tensor<512x256xf32>, tensor<256x1024xf32>) -> tensor<512x1024xf32> loc("MatMul_0")
    func.return %0 : tensor<512x1024xf32> loc(unknown)
  } loc("main")
}
