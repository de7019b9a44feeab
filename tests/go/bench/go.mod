module tether.test/bench

go 1.19
