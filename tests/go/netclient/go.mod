module tether.test/netclient

go 1.19
