-- traffik.strategies.base.ceil_div: a / b rounded up (b > 0), -((-a) // b) as floordiv does it.
local function ceildiv(a, b)
  local q = -a / b
  q = q - q % 1
  if q * b > -a then
    return 1 - q
  end
  if (q + 1) * b <= -a then
    return -q - 1
  end
  return -q
end
