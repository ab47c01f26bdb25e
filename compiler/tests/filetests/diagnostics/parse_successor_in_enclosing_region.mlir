module {
  func.func @f() {
    "x.region"() ({
      "x.br"()[^bb1] : () -> () loc("inner")
    }) : () -> () loc("region")
    "x.br"()[^bb1] : () -> () loc("outer")
  ^bb1:
    func.return loc(unknown)
  } loc("f")
}
