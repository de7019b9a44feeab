module tether.test/tracering

go 1.19
