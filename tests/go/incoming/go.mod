module tether.test/incoming

go 1.19
