module tether.test/gohost

go 1.19
