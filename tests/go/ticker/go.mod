module tether.test/ticker

go 1.19
