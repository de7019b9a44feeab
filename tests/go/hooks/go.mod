module tether.test/hooks

go 1.19
