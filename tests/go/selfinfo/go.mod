module tether.test/selfinfo

go 1.19
