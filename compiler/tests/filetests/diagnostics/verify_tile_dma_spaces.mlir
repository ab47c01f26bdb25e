module {
  func.func @main(%arg0: memref<128x64xbf16, "sram">) {
    %0 = "tile.alloc"() : () -> memref<128x64xbf16, "sram"> loc("alloc")
    "tile.dma_load"(%arg0, %0) : (memref<128x64xbf16, "sram">, memref<128x64xbf16, "sram">) -> () loc("load")
    func.return loc(unknown)
  } loc("main")
}
