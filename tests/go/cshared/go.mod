module tether.test/cshared

go 1.19
