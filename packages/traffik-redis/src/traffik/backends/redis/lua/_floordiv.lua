-- Python's a // b for whole numbers (b > 0, any sign of a): the floor of the double
-- quotient, checked against the exact products (it can be one off only near 2^53).
local function floordiv(a, b)
  local q = a / b
  q = q - q % 1
  if q * b > a then
    return q - 1
  end
  if (q + 1) * b <= a then
    return q + 1
  end
  return q
end
