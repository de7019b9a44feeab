module tether.test/files

go 1.19
