module tether.test/tlscgo

go 1.19
