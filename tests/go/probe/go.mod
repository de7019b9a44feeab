module tether.test/probe

go 1.19
